// Package redislog routes go-redis's own log lines (its connection
// pool's dial failures, hook errors, ...), which it prints unstructured
// to stderr by default ("redis: 2026/12/07 ... pool.go:770: redis:
// connection pool: failed to dial after 5 attempts: ..."), through zap:
// one JSON entry of logger "redis" per line, its message the constant
// "redis client library logged", the line in the field "line"
// (lower-case, go-redis's "redis: " prefix cut, without a trailing error,
// which is the error field), and the format it came from in "format",
// which stays the same from line to line. While Redis is away the pool writes such a line for each
// dial that failed (about two a second per process); a Logger writes the
// first line of each format and then at most one per interval, counting
// those it dropped, so an outage shows up in the logs as one line
// instead of a flood.
package redislog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Every is the least time between two entries of one go-redis format.
const Every = 30 * time.Second

// Logger is go-redis's internal logging interface (redis.SetLogger)
// writing to zap, at most one entry of each format per interval.
type Logger struct {
	logger   *zap.Logger
	interval time.Duration
	now      func() time.Time

	mu sync.Mutex
	// formats holds, by go-redis format, when its last entry was written
	// and how many lines were dropped since. go-redis's formats are
	// literals, so the map stays small.
	formats map[string]*seen
}

type seen struct {
	logged  time.Time
	dropped int
}

// New returns a Logger writing to logger (named "redis") at most one
// entry of each format per interval; now is time.Now but in tests.
func New(logger *zap.Logger, interval time.Duration, now func() time.Time) *Logger {
	return &Logger{logger: logger.Named("redis"), interval: interval, now: now, formats: map[string]*seen{}}
}

// Install makes logger go-redis's logger, process-wide (every client of
// the process logs through it), at most one entry of a format per Every.
func Install(logger *zap.Logger) {
	redis.SetLogger(New(logger, Every, time.Now))
}

// Printf writes one go-redis line, unless a line of the same format was
// written less than the interval ago: then it only counts it, and the
// next entry of the format says how many it stands for ("dropped").
func (l *Logger) Printf(_ context.Context, format string, v ...any) {
	now := l.now()
	l.mu.Lock()
	s := l.formats[format]
	if s == nil {
		s = &seen{}
		l.formats[format] = s
	} else if now.Sub(s.logged) < l.interval {
		s.dropped++
		l.mu.Unlock()
		return
	}
	dropped, prev := s.dropped, s.logged
	s.logged, s.dropped = now, 0
	l.mu.Unlock()

	var fields []zap.Field
	// A trailing error (": %v" of an error) is the entry's error field.
	text := format
	if n := len(v); n > 0 && strings.HasSuffix(format, ": %v") {
		if err, ok := v[n-1].(error); ok {
			text, v = strings.TrimSuffix(format, ": %v"), v[:n-1]
			fields = append(fields, zap.Error(err))
		}
	}
	fields = append([]zap.Field{zap.String("line", line(fmt.Sprintf(text, v...)))}, fields...)
	fields = append(fields, zap.String("format", format))
	if dropped > 0 {
		// The lines of this format not written since its last entry.
		fields = append(fields, zap.Int("dropped", dropped), zap.Duration("dropped_over", now.Sub(prev)))
	}
	l.logger.Warn("redis client library logged", fields...)
}

// line is what go-redis logged, without the "redis: " prefix its lines
// start with, starting lower-case.
func line(line string) string {
	line = strings.TrimPrefix(strings.TrimSpace(line), "redis: ")
	r, size := utf8.DecodeRuneInString(line)
	if r == utf8.RuneError || !unicode.IsUpper(r) {
		return line
	}
	return string(unicode.ToLower(r)) + line[size:]
}
