"""`raydiffusion-aws`: the AWS account side of `ray up cluster.yaml`, as code (boto3 only)."""
