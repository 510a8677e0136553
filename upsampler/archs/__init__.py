"""Networks: the SRGAN generator and discriminator (srgan), the VGG content / feature networks (vgg)."""
