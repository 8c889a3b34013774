"""Scripts that measure the numbers the README quotes."""
