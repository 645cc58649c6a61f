"""The module registry: packages in, immutable validated versions out."""
