"""Training losses: the VGG content loss, pixel MSE, the adversarial losses and the study's noisy labels."""
