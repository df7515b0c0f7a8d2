"""AUTOMATIC1111's ``/sdapi/v1`` web API, for the tools and bots that speak it."""
