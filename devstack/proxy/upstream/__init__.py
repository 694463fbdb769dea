"""The leg from the proxy to a service: pooled keep-alive connections parsed with httptools."""
