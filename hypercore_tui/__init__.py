"""Hypercore: a terminal dashboard and CLI for QEMU/KVM virtual machines."""

__version__ = "0.1.0"
