"""Data: real MNIST, transformation families and context sampling."""
