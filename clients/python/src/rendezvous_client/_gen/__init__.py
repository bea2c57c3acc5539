"""Stubs generated from ``proto/rendezvous/v1/rendezvous.proto`` by ``generate.py``; do not edit."""
