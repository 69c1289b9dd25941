"""Data sets that reportgen builds itself."""
