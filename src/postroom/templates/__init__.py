"""Email template compilation and rendering.

Pure functions, no database: syntax checking at save time, compilation (CSS inlining,
text-part generation, unsubscribe footer) at publish time, and sandboxed per-recipient
rendering with output-size, time and loop limits. The public API lives in
:mod:`postroom.templates.rendering`.
"""
