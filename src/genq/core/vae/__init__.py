"""The seed's part 1: a convolutional VAE on MNIST (model, loss, data, train, interpolate, sample)."""
