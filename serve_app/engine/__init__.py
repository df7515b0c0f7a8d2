"""What runs on the model replicas (``deployment``), and ``client``: the ingress's one door to them."""
