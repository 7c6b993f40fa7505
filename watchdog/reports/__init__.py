"""What the watchdog writes for people: the CSV and HTML reports, tables, reference docs."""
