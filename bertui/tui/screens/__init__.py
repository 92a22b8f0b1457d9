"""The screens of bertui: New run, Monitor, Compare, Runs, and the confirmation modal."""
