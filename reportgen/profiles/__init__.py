"""What belongs to one known model alone: the shipped SD-UNet's builder, block roles and claims."""
