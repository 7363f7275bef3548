"""SIMULATION HARNESS: measurement of what a curious server learns (attacks,
audits), scored against the simulation's truth; may see both sides."""
