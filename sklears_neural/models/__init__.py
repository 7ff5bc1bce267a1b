"""Model families: one module per family, each an ``nn.Module`` plus its estimators."""
