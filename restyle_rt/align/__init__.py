"""FFHQ face alignment for faces models (optional ``[align]`` extra): landmarks -> the official crop recipe."""
