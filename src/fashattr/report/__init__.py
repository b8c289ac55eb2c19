"""Plots and reports: data in, figure out; no hidden I/O."""
