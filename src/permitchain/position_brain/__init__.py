"""Position state brain (P3.3): exchange snapshot vs shadow ledger → safe close permits."""
