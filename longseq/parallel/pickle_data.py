"""Read a pickle as data: no class is instantiated, called or changed by the pickle itself.

A standard unpickler, even one that restricts which globals a pickle may name, still lets the
pickle *act on* what it may name: ``BUILD`` sets attributes (on an instance, or on the class
object itself: ``pathlib.PosixPath._str`` set that way redirects every path the process then
builds), ``REDUCE`` calls, ``NEWOBJ`` runs ``__new__``, ``SETITEMS``/``APPENDS`` call methods of
whatever is on the stack. `DataUnpickler` interprets the opcode stream with none of that:

* a global is a `Token` naming an entry of the caller's `Schema` (anything else is refused);
* ``NEWOBJ`` of a record class with no arguments makes a `Pending` placeholder; ``BUILD`` only
  *records* the state of a placeholder, once; nothing else may be built;
* ``REDUCE`` calls only the schema's pure constructors (``torch.Size`` of ints, ...), each of
  which checks its arguments;
* ``SETITEM(S)``, ``APPEND(S)`` and ``ADDITEMS`` act only on plain dicts, lists and sets;
* ``INST``, ``OBJ``, persistent ids and the extension registry are refused.

`load_data` then turns the result into real objects (`Schema.make`: the record's own dataclass
constructor, after its fields are checked), bottom up; a cycle or a token left as a value is
refused.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

#: Deepest nesting of containers and records a data pickle may have.
MAX_DEPTH = 64


class RefusedPickle(ValueError):
    """The pickle does something a data pickle must not (the message says what)."""


@dataclass(frozen=True)
class Token:
    """A global the pickle named: ``module.name``, resolved by the schema, never called here."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class Pending:
    """A record under construction: its class token and the state ``BUILD`` recorded."""

    token: Token
    state: Any = None
    built: bool = False


@dataclass
class Schema:
    """What a data pickle may name.

    Attributes:
        values: globals that stand for a value (e.g. ``torch.float32``).
        calls: globals ``REDUCE`` may call, each a function of the argument tuple that checks
            it and returns the value (raising ``ValueError``/``TypeError`` otherwise).
        records: globals ``NEWOBJ`` + ``BUILD`` may make, each a function of the recorded
            state (its parts already made) that checks it and returns the object.
        value_types: the types ``calls`` return that are finished values (immutable, e.g.
            ``torch.Size``): `load_data` passes them through as they are.
    """

    values: dict[tuple[str, str], Any] = field(default_factory=dict)
    calls: dict[tuple[str, str], Callable[[tuple], Any]] = field(default_factory=dict)
    records: dict[tuple[str, str], Callable[[Any], Any]] = field(default_factory=dict)
    value_types: tuple[type, ...] = ()

    def knows(self, module: str, name: str) -> bool:
        key = (module, name)
        return key in self.values or key in self.calls or key in self.records


class DataUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be replaced
    """Unpickle into tokens, placeholders and plain containers (see the module doc)."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)
    # set by the pure-Python unpickler at run time; typeshed does not declare them
    stack: list[Any]
    append: Callable[[Any], None]
    pop_mark: Callable[[], list[Any]]

    def __init__(self, file: IO[bytes], schema: Schema) -> None:
        super().__init__(file)
        self.schema = schema

    def find_class(self, module: str, name: str) -> Token:
        if not self.schema.knows(module, name):
            raise RefusedPickle(f"refusing to load {module}.{name}")
        return Token(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("refusing a persistent id")

    def _refuse(self, what: str) -> None:
        raise RefusedPickle(what)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        key = (func.module, func.name) if isinstance(func, Token) else None
        if key not in self.schema.calls:
            raise RefusedPickle(f"refusing to call {_what(func)}")
        if not isinstance(args, tuple) or any(isinstance(a, Token | Pending) for a in args):
            raise RefusedPickle(f"refusing to call {func} with a class or object argument")
        try:
            self.stack[-1] = self.schema.calls[key](args)
        except (TypeError, ValueError, OverflowError) as e:
            raise RefusedPickle(f"refusing {func}{_short(args)}: {e}") from None

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _newobj(self, cls: Any, args: Any, kwargs: Any = None) -> None:
        key = (cls.module, cls.name) if isinstance(cls, Token) else None
        if key not in self.schema.records:
            raise RefusedPickle(f"refusing to create an instance of {_what(cls)}")
        if args != () or kwargs not in (None, {}):
            raise RefusedPickle(f"refusing to create {cls} with constructor arguments")
        self.append(Pending(cls))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self._newobj(cls, args)

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._newobj(cls, args, kwargs)

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, Pending) or inst.built:
            raise RefusedPickle(f"refusing to set attributes of {_what(inst)}")
        inst.state, inst.built = state, True

    dispatch[pickle.BUILD[0]] = load_build

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        _plain(self.stack[-1], (dict, OrderedDict), "SETITEM")[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        d = _plain(self.stack[-1], (dict, OrderedDict), "SETITEMS")
        for i in range(0, len(items), 2):
            d[items[i]] = items[i + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        _plain(self.stack[-1], (list,), "APPEND").append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        _plain(self.stack[-1], (list,), "APPENDS").extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        _plain(self.stack[-1], (set,), "ADDITEMS").update(items)

    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_inst(self) -> None:
        self._refuse("refusing the INST opcode (instantiates a class)")

    def load_obj(self) -> None:
        self._refuse("refusing the OBJ opcode (instantiates a class)")

    def load_ext(self) -> None:
        self._refuse("refusing an extension-registry global")

    dispatch[pickle.INST[0]] = load_inst
    dispatch[pickle.OBJ[0]] = load_obj
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = load_ext


def _plain(obj: Any, types: tuple[type, ...], op: str) -> Any:
    if type(obj) not in types:
        raise RefusedPickle(f"refusing {op} on {_what(obj)}")
    return obj


def _what(obj: Any) -> str:
    if isinstance(obj, Token):
        return str(obj)
    if isinstance(obj, Pending):
        return f"an instance of {obj.token}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _short(args: Any) -> str:
    text = repr(args)
    return text if len(text) <= 60 else text[:57] + "..."


def load_data(file: IO[bytes], schema: Schema) -> Any:
    """Unpickle ``file`` with `DataUnpickler` and make its records (`Schema.records`) bottom up.
    Raises `RefusedPickle` for anything a data pickle must not do or hold."""
    raw = DataUnpickler(file, schema).load()
    return _Maker(schema).make(raw, 0)


class _Maker:
    """Placeholders and containers -> objects; shared parts stay shared, cycles are refused."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.done: dict[int, Any] = {}
        self.busy: set[int] = set()  # ids stay valid: every raw object is reachable from the root

    def make(self, obj: Any, depth: int) -> Any:
        if isinstance(obj, str | bytes | int | float | complex | type(None)):
            return obj
        if isinstance(obj, Token):
            key = (obj.module, obj.name)
            if key not in self.schema.values:
                raise RefusedPickle(f"refusing {obj} as a value")
            return self.schema.values[key]
        if depth > MAX_DEPTH:
            raise RefusedPickle(f"nested deeper than {MAX_DEPTH} levels")
        i = id(obj)
        if i in self.done:
            return self.done[i]
        if i in self.busy:
            raise RefusedPickle("refusing a cyclic structure")
        self.busy.add(i)
        out = self._make(obj, depth + 1)
        self.busy.discard(i)
        self.done[i] = out
        return out

    def _make(self, obj: Any, depth: int) -> Any:
        kind = type(obj)
        if isinstance(obj, Pending):
            state = self.make(obj.state, depth)  # None: never built (a dataclass without fields)
            try:
                return self.schema.records[(obj.token.module, obj.token.name)](state)
            except (TypeError, ValueError) as e:
                raise RefusedPickle(f"{obj.token}: {e}") from None
        if kind in (dict, OrderedDict):
            return kind((self.make(k, depth), self.make(v, depth)) for k, v in obj.items())
        if kind in (list, tuple, set, frozenset):
            return kind(self.make(v, depth) for v in obj)
        if kind is bytearray:
            return bytearray(obj)
        if isinstance(obj, self.schema.value_types):
            return obj  # made by one of the schema's own constructors
        raise RefusedPickle(f"refusing {_what(obj)}")
