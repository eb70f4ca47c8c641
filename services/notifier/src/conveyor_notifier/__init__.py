"""The notifier: job e-mails to clients, alerts to operators, Slack for the care team."""
