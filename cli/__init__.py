"""The `fedtype` console script: one subcommand a module."""
