"""Data: readers, row validation, tokenisation with label masks, collation and packing, DataModules (SFT, preference)."""

from lit_ft.data.collate import Collator
from lit_ft.data.packing import pack_examples
from lit_ft.data.preference_datamodule import PairCollator, PreferenceDataModule
from lit_ft.data.preference_rows import PreferencePair, parse_preference_row
from lit_ft.data.readers import DataError, Record, read_records
from lit_ft.data.sft_datamodule import FineTuneDataModule, SFTDataModule
from lit_ft.data.tokenize import IGNORE_INDEX, tokenize_conversation, tokenize_text

__all__ = [
    "IGNORE_INDEX",
    "Collator",
    "DataError",
    "FineTuneDataModule",
    "PairCollator",
    "PreferenceDataModule",
    "PreferencePair",
    "Record",
    "SFTDataModule",
    "pack_examples",
    "parse_preference_row",
    "read_records",
    "tokenize_conversation",
    "tokenize_text",
]
