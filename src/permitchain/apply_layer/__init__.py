"""Apply layer: the planner (proposal → plan) and the executor (permits → one order)."""
