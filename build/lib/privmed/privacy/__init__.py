"""Privacy accounting (through Opacus accountants) and the per-run privacy ledger."""
