"""What every stage shares: config, errors, file writes, manifest, run folder, reports."""
