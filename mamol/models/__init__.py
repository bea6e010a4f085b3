"""Models: the frozen CLIP backbone, the hosts (remote, image-text) a method plugs into, the MaMOL layer."""
