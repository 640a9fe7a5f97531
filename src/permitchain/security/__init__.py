"""Least privilege: Redis ACL users per service."""
