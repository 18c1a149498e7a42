"""{{name}}: a Jobdock job."""
