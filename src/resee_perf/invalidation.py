"""Tag invalidation: tag generations, after-commit invalidation, and the model signal receivers.

Each tag has a generation number stored under its own cache key. A cached entry records the
generations of its tags as they were *before* its value was computed; a hit is valid only if
they still match (the cache reads the entry and the tag keys in one ``get_many``, one MGET on
Redis). Invalidating a tag is then one INCR, whatever the number of entries under it: no key
scans on the write path.

Because the generations are read before the body runs, a reader that loaded the database
before a write committed stores its value under the old generation; the invalidation that
follows the commit bumps the generation and that value can never be served (the stale-set race
that memcache leases solve, NSDI 2013).

A generation key that is missing (never created, expired, evicted, or lost with a Redis
restart) is created with a random value rather than 0, so that an entry written under an
evicted generation cannot become valid again when the key is recreated.

Every entry also carries the cache's epoch (:func:`resee_perf._keys.epoch_key`, a key family
no tag can address): its generation changes when Redis comes back from an older state (a
snapshot restore, a failover; see :mod:`resee_perf._store`) or when failed invalidations
overflow their queue (:mod:`resee_perf._pending`), and then every entry written before is a
miss. :mod:`resee_perf._generations` reads and bumps generations.

An invalidation that fails (Redis down or hung) is not dropped: it waits in
:mod:`resee_perf._pending` and is retried until it lands; meanwhile this process serves no entry
under its tags.

:func:`invalidate_tags` bumps generations after the current transaction commits (at once
outside a transaction, never after a rollback); :func:`invalidate_on` calls it from
``post_save``/``post_delete``/``m2m_changed``; :func:`invalidate_objects` is the explicit path for
writes that send no signals. docs/invalidation.md explains the model for users.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, ForeignKey, Model, Q, signals

from resee_perf import _db_on_delete
from resee_perf._tag_invalidation import (
    check_cache_alias,
    invalidate_tags,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "NotRegistered",
    "invalidate_objects",
    "invalidate_on",
    "invalidate_tags",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)
TagsFunction = Callable[[M], Iterable[str]]


class NotRegistered(LookupError):
    """:func:`invalidate_objects` got an object whose model has no :func:`invalidate_on`."""


# --- invalidate_on: signal receivers ---------------------------------------------------------


@dataclass(frozen=True)
class _Registration:
    tags: Callable[[Any], Iterable[str]]
    track: tuple[Field[Any, Any], ...]
    cache: str | None


# Process-wide by design, like Django's signal registry that it feeds: registered model ->
# dispatch uid -> registration.
_registry: dict[type[Model], dict[str, _Registration]] = {}

# Where the pre_save receiver leaves the old values of tracked fields for post_save.
_OLD_VALUES = "_resee_perf_old_values"


@overload
def invalidate_on(
    model: type[M],
    tags: TagsFunction[M],
    *,
    track: Sequence[str] = (),
    cache: str | None = None,
    dispatch_uid: str | None = None,
    db_on_delete: bool = False,
) -> TagsFunction[M]: ...


@overload
def invalidate_on(
    model: type[M],
    tags: None = None,
    *,
    track: Sequence[str] = (),
    cache: str | None = None,
    dispatch_uid: str | None = None,
    db_on_delete: bool = False,
) -> Callable[[TagsFunction[M]], TagsFunction[M]]: ...


def invalidate_on(
    model: type[M],
    tags: TagsFunction[M] | None = None,
    *,
    track: Sequence[str] = (),
    cache: str | None = None,
    dispatch_uid: str | None = None,
    db_on_delete: bool = False,
) -> TagsFunction[M] | Callable[[TagsFunction[M]], TagsFunction[M]]:
    """Invalidate ``tags(instance)`` whenever an instance of ``model`` is saved or deleted.

    ``tags`` returns the tags a row belongs to. On an update that changes a field named in
    ``track``, it is also called with a copy of the instance holding the values the row had
    before, so that both the old and the new tags are invalidated (a content moved from one
    category to another invalidates both). Connects ``post_save`` and ``post_delete`` (also
    for proxies and subclasses of ``model`` loaded by then), ``m2m_changed`` when ``model`` is
    a many-to-many ``through`` model, and ``pre_save`` when ``track`` is given. Invalidation
    follows :func:`invalidate_tags`: after commit, on the database of the write.

    Registering again with the same ``dispatch_uid`` (default: where ``tags`` is defined)
    replaces the earlier registration, so calling this from ``AppConfig.ready()`` or at import
    is idempotent. Usable as a decorator: ``@invalidate_on(Content, track=["category"])``.

    A foreign key of ``model`` with a database-level ``on_delete`` (Django 6.1's
    ``DB_CASCADE``, ``DB_SET_NULL``, ``DB_SET_DEFAULT``) deletes or changes rows without any
    signal: the system check ``resee_perf.W045`` names it. ``db_on_delete=True`` covers it by
    reading the rows it points at in the target's ``pre_delete`` and invalidating their tags.
    """
    if tags is None:

        def decorator(function: TagsFunction[M]) -> TagsFunction[M]:
            return invalidate_on(
                model,
                function,
                track=track,
                cache=cache,
                dispatch_uid=dispatch_uid,
                db_on_delete=db_on_delete,
            )

        return decorator
    if not callable(tags):
        raise TypeError(f"invalidate_on() needs a function returning tags, not {tags!r}.")
    if cache is not None:
        check_cache_alias(cache)
    registration = _Registration(tags=tags, track=_tracked_fields(model, track), cache=cache)
    _registry.setdefault(model, {})[dispatch_uid or _default_uid(tags)] = registration
    for sender in _senders(model):
        _connect(sender, pre_save=bool(registration.track))
    _db_on_delete.watch(model, cover=db_on_delete, invalidate=_invalidate_database_rows)
    return tags


def _tracked_fields(model: type[Model], names: Sequence[str]) -> tuple[Field[Any, Any], ...]:
    if isinstance(names, str):
        raise TypeError(f"track should be a list of field names, not the string {names!r}.")
    fields = []
    for name in names:
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            known = ", ".join(f.name for f in model._meta.concrete_fields)
            raise ImproperlyConfigured(
                f"invalidate_on({model._meta.label}, track=...): {model._meta.label} has no "
                f"field {name!r}. Its fields: {known}."
            ) from None
        if not isinstance(field, Field) or not field.concrete or field.many_to_many:
            raise ImproperlyConfigured(
                f"invalidate_on({model._meta.label}, track=...): {name!r} is not a column of "
                f"{model._meta.label}. For a many-to-many field, register its through model."
            )
        fields.append(field)
    return tuple(fields)


def _default_uid(tags: Callable[..., Any]) -> str:
    code = getattr(tags, "__code__", None)
    if code is None:
        return repr(tags)
    # Where the function is defined, not the function object: ready() running twice (as in
    # some test runners) builds a new lambda at the same place, and must not connect twice.
    qualname = getattr(tags, "__qualname__", "")
    return f"{tags.__module__}.{qualname}@{code.co_filename}:{code.co_firstlineno}"


def _senders(model: type[Model]) -> list[type[Model]]:
    # Django sends model signals with the class saved as sender, so a proxy or a multi-table
    # child of model needs its own connection.
    if not apps.models_ready:
        return [model]
    return [model, *(m for m in apps.get_models() if m is not model and issubclass(m, model))]


def _connect(sender: type[Model], *, pre_save: bool) -> None:
    label = sender._meta.label_lower
    uid = f"resee_perf.invalidation:{{}}:{label}"
    signals.post_save.connect(_on_post_save, sender=sender, dispatch_uid=uid.format("post_save"))
    signals.post_delete.connect(
        _on_post_delete, sender=sender, dispatch_uid=uid.format("post_delete")
    )
    # Sent only when sender is a through model; harmless otherwise.
    signals.m2m_changed.connect(
        _on_m2m_changed, sender=sender, dispatch_uid=uid.format("m2m_changed")
    )
    if pre_save:
        signals.pre_save.connect(
            _remember_old_values, sender=sender, dispatch_uid=uid.format("pre_save")
        )


def registrations() -> dict[type[Model], dict[str, _Registration]]:
    """A copy of every :func:`invalidate_on` registration, for :func:`restore_registrations`."""
    return {model: dict(regs) for model, regs in _registry.items()}


def restore_registrations(saved: dict[type[Model], dict[str, _Registration]]) -> None:
    """Back to the registrations :func:`registrations` returned (:mod:`resee_perf.testing`)."""
    _registry.clear()
    _registry.update({model: dict(regs) for model, regs in saved.items()})


def registered_caches() -> set[str]:
    """The cache aliases named by :func:`invalidate_on` registrations (for the system checks)."""
    return {r.cache for regs in _registry.values() for r in regs.values() if r.cache is not None}


def _registrations(model: type[Model]) -> list[_Registration]:
    return [
        registration
        for cls in model.__mro__
        if cls in _registry
        for registration in _registry[cls].values()
    ]


def _remember_old_values(
    sender: type[Model],
    instance: Model,
    raw: bool,
    using: str,
    update_fields: frozenset[str] | None,
    **kwargs: Any,
) -> None:
    instance.__dict__.pop(_OLD_VALUES, None)
    if raw or instance.pk is None or (instance._state.adding and sender._meta.pk.has_default()):
        return
    tracked = {f.attname: f for r in _registrations(sender) for f in r.track}
    if update_fields is not None:
        # A field left out of update_fields keeps its column, so it cannot change the tags.
        tracked = {
            attname: field
            for attname, field in tracked.items()
            if attname in update_fields or field.name in update_fields
        }
    if not tracked:
        return
    queryset = sender._base_manager.using(using).filter(pk=instance.pk)
    connection = connections[using]
    if connection.in_atomic_block and connection.features.has_select_for_no_key_update:
        # The lock the UPDATE takes a moment later anyway, taken now: a concurrent transaction
        # that moves the row first commits before we read, so the old values are exactly those
        # our UPDATE overwrites and no tag in between is missed.
        queryset = queryset.select_for_update(no_key=True)
    row = queryset.values_list(*tracked).first()
    if row is None:
        return
    changed = {
        attname: old
        for attname, old in zip(tracked, row, strict=True)
        # A deferred field is not saved, so it cannot have changed.
        if attname in instance.__dict__ and instance.__dict__[attname] != old
    }
    if changed:
        instance.__dict__[_OLD_VALUES] = changed


def _on_post_save(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    old_values: dict[str, Any] = instance.__dict__.pop(_OLD_VALUES, None) or {}
    _invalidate_instances(sender, [instance], using, old_values)


def _on_post_delete(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    _invalidate_instances(sender, [instance], using)


def _on_m2m_changed(
    sender: type[Model],
    instance: Model,
    action: str,
    reverse: bool,
    pk_set: set[Any] | None,
    using: str,
    **kwargs: Any,
) -> None:
    if action == "post_add" and pk_set:
        # add() inserts with bulk_create: no post_save.
        rows = _through_rows(sender, instance, reverse, pk_set)
    elif not sender._meta.auto_created:
        # remove() and clear() delete the rows of a custom through model with
        # QuerySet.delete(), which sends post_delete for each row since we listen to it.
        return
    elif action == "post_remove" and pk_set:
        # Django sends no delete signals for an auto-created through model's rows.
        rows = _through_rows(sender, instance, reverse, pk_set)
    elif action == "pre_clear":
        rows = _rows_to_clear(sender, instance, reverse, using)
    else:
        return
    _invalidate_instances(sender, rows, using)


def _through_rows(
    through: type[Model], instance: Model, reverse: bool, pk_set: set[Any]
) -> list[Model]:
    """Unsaved instances of ``through`` for the rows that ``add()``/``remove()`` change."""
    source, target, symmetrical = _m2m_ends(through)
    own, other = (target, source) if reverse else (source, target)
    own_value = getattr(instance, own.target_field.attname)
    rows = [through(**{own.attname: own_value, other.attname: pk}) for pk in pk_set]
    if symmetrical:
        # A symmetrical add() or remove() also changes the mirrored rows but signals once.
        rows += [through(**{own.attname: pk, other.attname: own_value}) for pk in pk_set]
    return rows


def _rows_to_clear(through: type[Model], instance: Model, reverse: bool, using: str) -> list[Model]:
    """The rows ``clear()`` is about to delete (it runs in a transaction, so they stay put)."""
    source, target, symmetrical = _m2m_ends(through)
    own, other = (target, source) if reverse else (source, target)
    own_value = getattr(instance, own.target_field.attname)
    condition = Q(**{own.attname: own_value})
    if symmetrical:
        condition |= Q(**{other.attname: own_value})
    return list(through._base_manager.using(using).filter(condition))


def _m2m_ends(through: type[Model]) -> tuple[ForeignKey[Any, Any], ForeignKey[Any, Any], bool]:
    """The through model's foreign keys to the model declaring the many-to-many field and to
    the other model, and whether the field is symmetrical."""
    for model in apps.get_models():
        for field in model._meta.local_many_to_many:
            if field.remote_field.through is through:
                source = through._meta.get_field(field.m2m_field_name())
                target = through._meta.get_field(field.m2m_reverse_field_name())
                assert isinstance(source, ForeignKey)
                assert isinstance(target, ForeignKey)
                return source, target, bool(getattr(field.remote_field, "symmetrical", False))
    raise LookupError(f"{through._meta.label} is not the through model of a many-to-many field.")


def _invalidate_instances(
    sender: type[Model],
    instances: Iterable[Model],
    using: str,
    old_values: Mapping[str, Any] | None = None,
) -> None:
    registrations = _registrations(sender)
    changed = old_values or {}
    by_cache: dict[str | None, list[str]] = {}
    for instance in instances:
        old = _with_values(instance, changed) if changed else None
        for registration in registrations:
            tags = by_cache.setdefault(registration.cache, [])
            tags += _call_tags(registration, instance)
            if old is not None and any(f.attname in changed for f in registration.track):
                tags += _call_tags(registration, old)
    for cache, tags in by_cache.items():
        invalidate_tags(*tags, using=using, cache=cache)


def _call_tags(registration: _Registration, instance: Model) -> list[str]:
    tags = registration.tags(instance)
    if isinstance(tags, str):
        raise TypeError(
            f"The tags function {getattr(registration.tags, '__qualname__', registration.tags)} "
            f"returned the string {tags!r} for {instance._meta.label}; return a list of tags, "
            f"such as [{tags!r}]."
        )
    return list(tags)


def _with_values(instance: Model, values: Mapping[str, Any]) -> Model:
    """A copy of ``instance`` with some attribute values replaced (the old ones)."""
    cls = type(instance)
    old = cls.__new__(cls)
    old.__dict__.update(instance.__dict__)
    old.__dict__.update(values)
    state = old._state = type(instance._state)()
    state.__dict__.update(instance._state.__dict__)
    # Drop cached related objects of the replaced foreign keys: old.category must be the old one.
    replaced = {f.name for f in cls._meta.concrete_fields if f.attname in values}
    state.fields_cache = {
        name: value for name, value in instance._state.fields_cache.items() if name not in replaced
    }
    return old


def invalidate_objects(objects: Iterable[Model], *, using: str | None = None) -> None:
    """Invalidate the tags that the :func:`invalidate_on` registrations give for ``objects``.

    For the writes that send no signals: ``bulk_create`` (pass the objects it returns),
    ``bulk_update`` and ``QuerySet.update`` (pass the rows as they were and as they are when a
    change moves them between tags). Each object's tags are invalidated on ``using``, by default
    the database the object was saved to or loaded from, after that transaction commits.
    Raises :class:`NotRegistered` for an object whose model has no registration.
    """
    groups: dict[tuple[type[Model], str], list[Model]] = {}
    for obj in objects:
        db = using or obj._state.db or DEFAULT_DB_ALIAS
        groups.setdefault((type(obj), db), []).append(obj)
    for (model, db), group in groups.items():
        if not _registrations(model):
            raise NotRegistered(
                f"invalidate_objects() got a {model._meta.label}, but no invalidate_on() "
                "registration covers that model; register one or call invalidate_tags()."
            )
        _invalidate_instances(model, group, db)


def _invalidate_database_rows(
    model: type[Model], rows: list[Model], using: str, new_values: Mapping[str, Any] | None
) -> None:
    """Invalidate ``rows`` as they are and, when the database sets them (DB_SET_NULL,
    DB_SET_DEFAULT), as they will be (:mod:`resee_perf._db_on_delete`)."""
    _invalidate_instances(model, rows, using)
    if new_values is not None:
        _invalidate_instances(model, [_with_values(row, new_values) for row in rows], using)
