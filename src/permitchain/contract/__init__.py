"""The chain's contract (docs/design.md), shared by every service and tool: key names, models,
settings, errors, permit signing, trading state, snapshot parsing and reason codes. Services
import from here, never from one another."""
