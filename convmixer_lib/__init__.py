"""ConvMixer on CIFAR-10: the library behind the tutorial book."""
