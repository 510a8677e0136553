"""The study around the package: notebook helpers, the runner behind run_all.sh, the GPU study, Colab, loss logs and plots."""
