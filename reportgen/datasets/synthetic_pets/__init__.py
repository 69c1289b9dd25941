"""The project's own pets data set; importing this registers ``synthetic_pets`` with TFDS."""

from reportgen.datasets.synthetic_pets.synthetic_pets_dataset_builder import SyntheticPets

__all__ = ["SyntheticPets"]
