"""The ``anchor`` strategy: mint through the energy_token program's ``mint_tokens_direct(amount: u64)``, or,
for a request that names its (meter, window), ``mint_generation(meter_id: [u8; 16], window_start_ms: i64,
amount: u64)``, which the program runs at most once per (meter, window).

The instructions are built by anchorpy from the IDL kept in the repo (``minting/idl/energy_token.json``,
legacy format; ``energy_token.upstream.json`` is the program's own new-format excerpt it was converted from).
The program binary is not available here, so only their bytes and account metas are tested.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID

from minting.chain.errors import WrongAuthority
from minting.chain.instructions import associated_token_address
from minting.chain.records import U64_MAX, InvalidGeneration, check_generation

if TYPE_CHECKING:
    from anchorpy import Idl, Program

# anchorpy is imported where an instruction is first built, not with this module: every Django process loads the
# chain client (the apps' hooks import it), and anchorpy's import (with the pytest plugin it loads when pytest is
# installed) was a sixth of django.setup()'s CPU in every worker, beat and localnet, for a strategy few use.

IDL_PATH = Path(__file__).resolve().parent.parent / "idl" / "energy_token.json"
TOKEN_INFO_SEED = b"token_info_2022"
MINT_SEED = b"mint_2022"
GENERATION_RECORD_SEED = b"gen_mint"
MINT_TOKENS_DIRECT = "mint_tokens_direct"
MINT_GENERATION = "mint_generation"


def load_idl(path: Path = IDL_PATH) -> Idl:
    from anchorpy import Idl

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
        from anchorpy import Program, Provider, Wallet
        from solana.rpc.async_api import AsyncClient

        provider = Provider(AsyncClient("http://127.0.0.1:1"), Wallet.dummy())
        return Program(load_idl(), self.program_id, provider)

    def user_token_account(self, wallet: Pubkey) -> Pubkey:
        return associated_token_address(wallet, self.mint, self.token_program)

    def generation_record(self, meter_id: bytes, window_start_ms: int) -> Pubkey:
        """The PDA recording that (meter, window) was minted: [b"gen_mint", meter_id, window_start_ms as i64 LE]."""
        window = window_start_ms.to_bytes(8, "little", signed=True)
        return Pubkey.find_program_address([GENERATION_RECORD_SEED, meter_id, window], self.program_id)[0]

    def mint_generation(
        self, *, wallet: Pubkey, authority: Pubkey, meter_id: bytes, window_start_ms: int, amount: int
    ) -> Instruction:
        """Mint ``amount`` to ``wallet``'s token account for one (meter, window); ``authority`` also pays the
        record's rent. Arguments the program would refuse are refused here, before a fee is spent on them."""
        check_generation(meter_id, window_start_ms)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= U64_MAX:
            raise InvalidGeneration(f"amount must be an int in 1..2^64-1 base units, got {amount!r}")
        if self.rec_validator == authority:
            # The program's two-party control (RecValidatorIsAuthority): one key may not fill both seats.
            raise WrongAuthority(
                f"the REC validator {self.rec_validator} is the authority: mint_generation needs a different key",
                code="rec_validator_is_authority",
            )
        accounts = {
            "mint": self.mint,
            "token_info": self.token_info,
            "destination": self.user_token_account(wallet),
            "destination_owner": wallet,
            "mint_record": self.generation_record(meter_id, window_start_ms),
            "authority": authority,
            "rec_validator": self.rec_validator,
            "payer": authority,
            "token_program": self.token_program,
            "associated_token_program": ASSOCIATED_TOKEN_PROGRAM_ID,
            "system_program": SYSTEM_PROGRAM_ID,
        }
        from anchorpy import Context

        context = Context(accounts=accounts)
        return self._program.instruction[MINT_GENERATION](list(meter_id), window_start_ms, amount, ctx=context)

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
        from anchorpy import Context

        return self._program.instruction[MINT_TOKENS_DIRECT](amount, ctx=Context(accounts=accounts))
