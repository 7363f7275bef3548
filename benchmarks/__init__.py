"""Speed and memory measurements, run as scripts."""
