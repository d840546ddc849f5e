package dashboard

// pageList is every page, in the navigation's order. A new page is one
// line here (see the package doc).
func (d *Dashboard) pageList() []Page {
	return []Page{
		d.overviewPage(),
		d.domainsPage(),
		d.domainPage(),
		d.alertsPage(),
		d.channelsPage(),
		d.clientCertsPage(),
		d.managedCertsPage(),
		d.auditPage(),
	}
}
