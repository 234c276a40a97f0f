"""Data sources for privmed: built-in phantom data sets and loaders."""
