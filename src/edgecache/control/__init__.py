"""Domain services of the control plane (zones, credentials, purges, tasks). No wire formats here."""
