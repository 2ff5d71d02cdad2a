"""Django 6.1's database-level ``on_delete`` (``DB_CASCADE``, ``DB_SET_NULL``,
``DB_SET_DEFAULT``): the rows the database deletes or changes send no pre/post_delete or
post_save, so :func:`resee_perf.invalidate_on`'s receivers never see them. This module finds
such foreign keys of registered models (``resee_perf.W045`` reports the uncovered ones) and,
with ``db_on_delete=True``, invalidates the rows from the target's ``pre_delete``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from django.apps import apps
from django.db.models import ForeignKey, Model, deletion, signals
from django.db.models.fields.related import lazy_related_operation

# (model, rows, using, new values or None): invalidation's way of invalidating rows as they
# are and, for DB_SET_NULL / DB_SET_DEFAULT, as they will be.
Invalidate = Callable[[type[Model], list[Model], str, Mapping[str, Any] | None], None]

# Process-wide like invalidate_on's registry: (registered model, foreign key name) -> whether a
# registration covers it (db_on_delete=True); and, for the covered ones, target model -> the
# (model, foreign key) rows to invalidate before one of its rows is deleted.
_watched: dict[tuple[type[Model], str], bool] = {}
_covered_targets: dict[type[Model], dict[tuple[type[Model], str], ForeignKey[Any, Any]]] = {}
_invalidate: list[Invalidate] = []


def state() -> tuple[dict[Any, Any], dict[Any, Any]]:
    """A copy of what is watched and covered, for :func:`restore` (:mod:`resee_perf.testing`)."""
    return dict(_watched), {target: dict(keys) for target, keys in _covered_targets.items()}


def restore(saved: tuple[dict[Any, Any], dict[Any, Any]]) -> None:
    _watched.clear()
    _watched.update(saved[0])
    _covered_targets.clear()
    _covered_targets.update({target: dict(keys) for target, keys in saved[1].items()})


def database_on_delete_keys(model: type[Model]) -> list[ForeignKey[Any, Any]]:
    """The foreign keys of ``model`` (and its multi-table parents) whose on_delete the
    database runs. None before Django 6.1, which has no such on_delete."""
    database_on_delete = getattr(deletion, "DatabaseOnDelete", None)
    if database_on_delete is None:
        return []
    # local_fields, not _meta.fields: this may run before the app registry is ready, when
    # _meta's field caches must not be filled yet.
    return [
        field
        for cls in (model, *model._meta.get_parent_list())
        for field in cls._meta.local_fields
        if isinstance(field, ForeignKey)
        and isinstance(field.remote_field.on_delete, database_on_delete)
    ]


def watch(model: type[Model], *, cover: bool, invalidate: Invalidate) -> None:
    if not _invalidate:
        _invalidate.append(invalidate)
    for field in database_on_delete_keys(model):
        key = (model, field.name)
        _watched[key] = _watched.get(key, False) or cover
        if cover:
            # The target may be a lazy reference ("self", "app.Model") until the registry is
            # ready.
            lazy_related_operation(
                partial(_cover_target, field=field), model, field.remote_field.model
            )


def _cover_target(model: type[Model], target: type[Model], *, field: ForeignKey[Any, Any]) -> None:
    target = target._meta.concrete_model or target
    _covered_targets.setdefault(target, {})[(model, field.name)] = field
    label = target._meta.label_lower
    # A proxy of the target sends pre_delete with itself as sender.
    proxies = [m for m in apps.get_models() if m._meta.proxy and m._meta.concrete_model is target]
    for sender in (target, *proxies):
        # A receiver also makes Django's Collector send pre_delete for each row rather than
        # fast-delete them with one query.
        signals.pre_delete.connect(
            _on_target_pre_delete,
            sender=sender,
            dispatch_uid=f"resee_perf.invalidation:db_on_delete:{label}:{sender._meta.label_lower}",
        )


def database_on_delete_relations() -> list[tuple[type[Model], ForeignKey[Any, Any], bool]]:
    """(model, foreign key, covered) for each registered model's foreign key whose on_delete the
    database runs (for the system checks)."""
    return [
        (model, field, covered)
        for (model, name), covered in _watched.items()
        for field in database_on_delete_keys(model)
        if field.name == name
    ]


def _on_target_pre_delete(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    # pre_delete runs inside the deletion's transaction, before its DELETE: the rows the
    # database is about to delete or change are still there, as they are now.
    target = sender._meta.concrete_model or sender
    for (model, _), field in _covered_targets.get(target, {}).items():
        rows = list(model._base_manager.using(using).filter(**{field.name: instance}))
        if not rows:
            continue
        on_delete = field.remote_field.on_delete
        new_values: Mapping[str, Any] | None = None
        if on_delete is not getattr(deletion, "DB_CASCADE", None):
            # DB_SET_NULL / DB_SET_DEFAULT: the rows stay, under the tags of their new value.
            new = (
                None if on_delete is getattr(deletion, "DB_SET_NULL", None) else field.get_default()
            )
            new_values = {field.attname: new}
        for invalidate in _invalidate:
            invalidate(model, rows, using, new_values)
