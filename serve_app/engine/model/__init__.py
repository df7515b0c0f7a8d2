"""One checkpoint on a replica: loading it, its task pipelines, LoRAs, weight files and S3 sync."""
