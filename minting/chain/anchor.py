"""The ``anchor`` strategy: mint through the energy_token program's ``mint_tokens_direct(amount: u64)``.

The instruction is built by anchorpy from the IDL kept in the repo (``minting/idl/energy_token.json``,
legacy format). The program binary is not available here, so only its bytes and account metas are tested.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from anchorpy import Context, Idl, Program, Provider, Wallet
from solana.rpc.async_api import AsyncClient
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID

from minting.chain.instructions import associated_token_address

IDL_PATH = Path(__file__).resolve().parent.parent / "idl" / "energy_token.json"
TOKEN_INFO_SEED = b"token_info_2022"
MINT_SEED = b"mint_2022"
MINT_TOKENS_DIRECT = "mint_tokens_direct"


def load_idl(path: Path = IDL_PATH) -> Idl:
    return Idl.from_json(path.read_text())


class EnergyTokenProgram:
    """Addresses and instructions of one deployed energy_token program."""

    token_program = TOKEN_2022_PROGRAM_ID

    def __init__(self, program_id: Pubkey, *, registry_authority: Pubkey, rec_validator: Pubkey) -> None:
        self.program_id = program_id
        self.registry_authority = registry_authority
        self.rec_validator = rec_validator
        self.token_info, _ = Pubkey.find_program_address([TOKEN_INFO_SEED], program_id)
        self.mint, _ = Pubkey.find_program_address([MINT_SEED], program_id)

    @cached_property
    def _program(self) -> Program:
        # Building instructions needs no connection; the provider is only there because Program requires one
        # (the client is never used, so nothing is ever sent through it).
        provider = Provider(AsyncClient("http://127.0.0.1:1"), Wallet.dummy())
        return Program(load_idl(), self.program_id, provider)

    def user_token_account(self, wallet: Pubkey) -> Pubkey:
        return associated_token_address(wallet, self.mint, self.token_program)

    def mint_tokens_direct(self, *, wallet: Pubkey, authority: Pubkey, amount: int) -> Instruction:
        accounts = {
            "token_info": self.token_info,
            "mint": self.mint,
            "user_token_account": self.user_token_account(wallet),
            "authority": authority,
            "registry_authority": self.registry_authority,
            "rec_validator": self.rec_validator,
            "token_program": self.token_program,
        }
        return self._program.instruction[MINT_TOKENS_DIRECT](amount, ctx=Context(accounts=accounts))
