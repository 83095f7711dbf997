"""``/addons/products``: the merchant's add-on products (create, list, read, change)."""

from __future__ import annotations

from flask import Response

import storage

from .. import products
from ..pagination import paginate
from ..present import product_body
from ..schemas import ListQuerySchema, ProductCreateSchema, ProductSchema, ProductUpdateSchema
from . import blueprint
from .http import authenticate, load, load_query, respond, write
from .openapi import operation

_create_schema = ProductCreateSchema()
_update_schema = ProductUpdateSchema()
_list_schema = ListQuerySchema()


@blueprint.post("/addons/products")
@operation(summary="Create an add-on product", tag="products", body=ProductCreateSchema,
           response=ProductSchema, status=201)
def create_product() -> Response:
    """A new add-on: ``price`` (decimal string) buys ``credit_amount`` credits."""
    merchant_id = authenticate()
    data = load(_create_schema)
    return write(merchant_id, data, lambda: (product_body(products.create_product(merchant_id, data)), 201))


@blueprint.get("/addons/products")
@operation(summary="List add-on products", tag="products", query=ListQuerySchema,
           response=ProductSchema, many=True)
def list_products() -> Response:
    """The merchant's products, newest first."""
    merchant_id = authenticate()
    args = load_query(_list_schema)
    query = storage.Product.select().where(storage.Product.merchant == merchant_id)
    return respond(paginate(query, storage.Product.id, product_body, limit=args["limit"], cursor=args.get("cursor")))


@blueprint.get("/addons/products/<product_id>")
@operation(summary="Read an add-on product", tag="products", response=ProductSchema, errors=(404,))
def get_product(product_id: str) -> Response:
    """One product; 404 ``product_not_found`` (also for another merchant's)."""
    merchant_id = authenticate()
    return respond(product_body(products.get_product(merchant_id, product_id)))


@blueprint.patch("/addons/products/<product_id>")
@operation(summary="Change an add-on product", tag="products", body=ProductUpdateSchema,
           response=ProductSchema, errors=(404,))
def update_product(product_id: str) -> Response:
    """Change any of the product's fields; applies to future purchases and top-ups."""
    merchant_id = authenticate()
    data = load(_update_schema)
    return write(merchant_id, data,
                 lambda: (product_body(products.update_product(merchant_id, product_id, data)), 200))
