"""``/carrier-accounts``: the tenant's own carrier accounts (credentials by reference).

Another tenant's account is a 404, as is a deleted one. A dialer gets an account's
credential values with :func:`gateway.store.resolve_account_credentials` (at call time,
within the tenant's grant); no route returns or logs them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Path, Response

from gateway.api.auth import Tenant
from gateway.api.carrier_schemas import CarrierAccountCreate, CarrierAccountList, CarrierAccountOut
from gateway.api.deps import Api
from gateway.api.errors import ApiError
from gateway.api.responses import AUTH, BODY, NOT_FOUND, location
from gateway.api.routing import GatewayRoute

__all__ = ["router"]

log = logging.getLogger("gateway.api")

router = APIRouter(tags=["carrier-accounts"], route_class=GatewayRoute)

AccountId = Annotated[str, Path(alias="accountId", description="Carrier account id (cac_…).")]


@router.post(
    "/carrier-accounts",
    operation_id="createCarrierAccount",
    summary="Add a carrier account",
    status_code=201,
    response_model=CarrierAccountOut,
    responses={201: {"description": "The account.", **location("/carrier-accounts/{accountId}")}, **BODY},
)
async def create_carrier_account(
    body: CarrierAccountCreate, tenant: Tenant, api: Api, response: Response
) -> CarrierAccountOut:
    rec = await asyncio.to_thread(
        api.store.create_carrier_account, kind=body.kind, name=body.name, secret_refs=body.secret_refs,
        numbers=body.numbers, default=body.default, tenant=tenant,
    )  # fmt: skip
    log.info("carrier account %s created (%s, %d numbers)", rec.id, rec.kind, len(rec.numbers))
    response.headers["Location"] = f"/carrier-accounts/{rec.id}"
    return CarrierAccountOut.of(rec)


@router.get(
    "/carrier-accounts",
    operation_id="listCarrierAccounts",
    summary="List the tenant's carrier accounts",
    response_model=CarrierAccountList,
    responses={200: {"description": "The accounts, oldest first."}, **AUTH},
)
async def list_carrier_accounts(tenant: Tenant, api: Api) -> CarrierAccountList:
    recs = await asyncio.to_thread(api.store.list_carrier_accounts, tenant=tenant)
    return CarrierAccountList(data=[CarrierAccountOut.of(r) for r in recs])


@router.get(
    "/carrier-accounts/{accountId}",
    operation_id="getCarrierAccount",
    summary="Get a carrier account",
    response_model=CarrierAccountOut,
    responses={200: {"description": "The account."}, **AUTH, **NOT_FOUND},
)
async def get_carrier_account(account_id: AccountId, tenant: Tenant, api: Api) -> CarrierAccountOut:
    rec = await asyncio.to_thread(api.store.get_carrier_account, account_id, tenant=tenant)
    if rec is None:
        raise ApiError(404, "not_found", f"carrier account {account_id!r} not found")
    return CarrierAccountOut.of(rec)


@router.delete(
    "/carrier-accounts/{accountId}",
    operation_id="deleteCarrierAccount",
    summary="Delete a carrier account",
    description="Calls already placed through it keep it (they can still be hung up); it is no "
    "longer listed, readable or usable for new calls, and stops being the default.",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted."}, **AUTH, **NOT_FOUND},
)
async def delete_carrier_account(account_id: AccountId, tenant: Tenant, api: Api) -> Response:
    if not await asyncio.to_thread(api.store.delete_carrier_account, account_id, tenant=tenant):
        raise ApiError(404, "not_found", f"carrier account {account_id!r} not found")
    log.info("carrier account %s deleted", account_id)
    return Response(status_code=204)
