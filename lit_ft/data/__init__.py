"""Data: readers, row validation, tokenisation with label masks, collation and packing, DataModules (SFT, preference)."""

from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.collate import Collator, PairCollator
from lit_ft.data.datamodule import FineTuneDataModule
from lit_ft.data.packing import pack_examples
from lit_ft.data.preference_datamodule import PreferenceDataModule
from lit_ft.data.preference_rows import PreferencePair, parse_preference_row
from lit_ft.data.readers import DataError, Record, read_records
from lit_ft.data.sft_datamodule import SFTDataModule
from lit_ft.data.tokenize import tokenize_conversation, tokenize_text

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
