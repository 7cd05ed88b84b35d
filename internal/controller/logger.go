package controller

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/gigapath/gigapath/internal/policy"
)

// NewLogger returns the daemon's logger on w, set up as the policy's
// log: section says. A reload that changes log.level or log.format
// applies to it (and to every logger derived from it with With), so those
// keys take effect without a restart.
func NewLogger(w io.Writer, l policy.Log) *slog.Logger {
	sw := &logSwitch{}
	h := &switchHandler{sw: sw}
	opts := &slog.HandlerOptions{Level: &sw.level}
	h.text, h.json = slog.NewTextHandler(w, opts), slog.NewJSONHandler(w, opts)
	sw.apply(l)
	return slog.New(h)
}

// logSwitch is the state every handler derived from one NewLogger shares.
type logSwitch struct {
	level slog.LevelVar
	json  atomic.Bool
}

func (s *logSwitch) apply(l policy.Log) {
	lvl := slog.LevelInfo
	_ = lvl.UnmarshalText([]byte(l.Level))
	s.level.Set(lvl)
	s.json.Store(strings.EqualFold(l.Format, "json"))
}

// switchHandler writes through its text or JSON handler, whichever the
// switch says; both carry the same attributes and groups.
type switchHandler struct {
	sw         *logSwitch
	text, json slog.Handler
}

func (h *switchHandler) pick() slog.Handler {
	if h.sw.json.Load() {
		return h.json
	}
	return h.text
}

func (h *switchHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick().Enabled(ctx, l)
}

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick().Handle(ctx, r)
}

func (h *switchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &switchHandler{sw: h.sw, text: h.text.WithAttrs(as), json: h.json.WithAttrs(as)}
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	return &switchHandler{sw: h.sw, text: h.text.WithGroup(name), json: h.json.WithGroup(name)}
}

// switchable reports whether applyLog can change the logger.
func switchable(log *slog.Logger) bool {
	_, ok := log.Handler().(*switchHandler)
	return ok
}

// applyLog makes the logger follow the policy's log: section; false when
// it was not made by NewLogger (a caller's own), which cannot follow.
func applyLog(log *slog.Logger, l policy.Log) bool {
	h, ok := log.Handler().(*switchHandler)
	if ok {
		h.sw.apply(l)
	}
	return ok
}
