"""The operator console: an HTTP API, a live web page and notifications (docs/console.md).

Not on the order path: it reads Redis, and writes only through the operator actions the CLI
uses (trading state, proposals, reconcile), audited with the operator's name.
"""
