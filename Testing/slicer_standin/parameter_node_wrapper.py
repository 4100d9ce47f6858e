"""``slicer.parameterNodeWrapper``: the ``@parameterNodeWrapper`` class decorator, copied from Slicer's
Base/Python/slicer/parameterNodeWrapper/ (wrapper.py, serializers.py, validators.py, default.py, util.py) for the
annotations a module's parameter node uses: ``int``, ``float``, ``str``, ``bool`` and MRML node classes, each with
its default (the class attribute, else the serializer's: 0, "", False, None), ``Annotated`` validators and
``Default``. What it does, as there:

* the decorator replaces each annotated member by a property of the class and gives the class
  ``allParameters``, ``default``, ``isCached``, ``dataType``, ``getValue``, ``setValue``, ``StartModify``,
  ``EndModify``, ``AddObserver``, ``RemoveObserver``, ``Modified`` (the GUI binding ``connectGui`` /
  ``connectParametersToGui`` / ``disconnectGui`` is not copied);
* ``Wrapper(parameterNode)`` writes the default of every parameter the node does not hold yet;
* a value is written through its serializer after its validators: ``str`` / numbers / ``bool`` refuse None
  (ValueError) and other types (TypeError); a node parameter takes None or an instance of its class, kept as the
  node reference of that name plus an empty parameter that marks it present;
* reads come from a cache, refreshed on every Modified event of the parameter node; each write is wrapped in
  ``NodeModify`` (one Modified event).
"""

from __future__ import annotations

import typing
import weakref

slicer = __import__("slicer")
vtk = __import__("vtk")


# validators.py -------------------------------------------------------------------------------------------


class Validator:
    def validate(self, value) -> None:
        raise NotImplementedError("validate is not implemented")


class NotNone(Validator):
    def validate(self, value) -> None:
        if value is None:
            raise ValueError("Value must not be None")


class IsInstance(Validator):
    def __init__(self, classtype) -> None:
        self.classtype = classtype

    def validate(self, value) -> None:
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


# default.py ------------------------------------------------------------------------------------------------


class Default:
    def __init__(self, value=None, *, generator=None) -> None:
        self._value = value
        self._generator = generator

    @property
    def value(self):
        return self._generator() if self._generator else self._value


# serializers.py --------------------------------------------------------------------------------------------


class _ValueSerializer:
    """StringSerializer, NumberSerializer, BoolSerializer: a parameter of the node, present when it is set."""

    def __init__(self, type_) -> None:
        self.type = type_
        self.validators = [NotNone(), IsInstance((int, float) if type_ is float else type_)]

    def default(self):
        return {str: "", int: 0, float: 0, bool: False}[self.type]

    def isIn(self, parameterNode, name: str) -> bool:
        return parameterNode.HasParameter(name)

    def write(self, parameterNode, name: str, value) -> None:
        if self.type is bool:
            parameterNode.SetParameter(name, "True" if value else "False")
        else:
            parameterNode.SetParameter(name, str(value))

    def read(self, parameterNode, name: str):
        text = parameterNode.GetParameter(name)
        if self.type is bool:
            return text == "True"
        return text if self.type is str else self.type(text)


class _NodeSerializer:
    """NodeSerializer: the node reference ``name``, and an empty parameter ``name`` that marks it present."""

    def __init__(self, type_) -> None:
        self.type = type_
        self.validators = [IsInstance(type_)]

    def default(self):
        return None

    def isIn(self, parameterNode, name: str) -> bool:
        return parameterNode.HasParameter(name)

    def write(self, parameterNode, name: str, value) -> None:
        parameterNode.SetParameter(name, "")
        parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)

    def read(self, parameterNode, name: str):
        return parameterNode.GetNodeReference(name)


def createSerializer(type_, annotations):
    validators = [a for a in annotations if isinstance(a, Validator)]
    if type_ in (str, int, float, bool):
        serializer = _ValueSerializer(type_)
    elif isinstance(type_, type) and issubclass(type_, slicer.vtkMRMLNode):
        serializer = _NodeSerializer(type_)
    else:
        raise Exception(f"Unable to create serializer for type: {type_}")
    serializer.validators = serializer.validators + validators
    return serializer, [a for a in annotations if not isinstance(a, Validator)]


# wrapper.py ------------------------------------------------------------------------------------------------


class _Parameter:
    def __init__(self, name: str, serializer, default: Default) -> None:
        self.name = name
        self.serializer = serializer
        self.default = default

    def isIn(self, parameterNode) -> bool:
        return self.serializer.isIn(parameterNode, self.name)

    def write(self, parameterNode, value) -> None:
        for validator in self.serializer.validators:
            validator.validate(value)
        self.serializer.write(parameterNode, self.name, value)

    def read(self, parameterNode):
        if not self.isIn(parameterNode):
            self.write(parameterNode, self.default.value)
        return self.serializer.read(parameterNode, self.name)


class _CachedParameterWrapper:
    def __init__(self, parameter: _Parameter, parameterNode) -> None:
        self.parameter = parameter
        self.parameterNode = parameterNode
        self._value = parameter.read(parameterNode)
        selfWeakRef = weakref.ref(self)
        self._observerTag = parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                      lambda caller, event: selfWeakRef()._onModified(caller, event))
        self._currentlyWriting = False

    def __del__(self) -> None:
        self.parameterNode.RemoveObserver(self._observerTag)

    def _onModified(self, caller, event) -> None:
        if not self._currentlyWriting:
            self._value = self.parameter.read(self.parameterNode)

    def write(self, value) -> None:
        self._currentlyWriting = True
        try:
            with slicer.util.NodeModify(self.parameterNode):
                self.parameter.write(self.parameterNode, value)
                self._value = self.parameter.read(self.parameterNode)
        finally:
            self._currentlyWriting = False

    def read(self):
        return self._value


def _makeProperty(name: str):
    return property(lambda self: getattr(self, f"_{name}_impl").read(),
                    lambda self, value: getattr(self, f"_{name}_impl").write(value))


def _initMethod(self, parameterNode, prefix: typing.Optional[str] = None) -> None:
    self.parameterNode = parameterNode
    for name, (serializer, default, _) in self.allParameters.items():
        parameter = _Parameter(f"{prefix or ''}{name}", serializer, default)
        if not parameter.isIn(parameterNode):
            parameter.write(parameterNode, default.value)
        setattr(self, f"_{name}_impl", _CachedParameterWrapper(parameter, parameterNode))


def _checkParamName(wrapper, name: str) -> None:
    if name not in wrapper.allParameters:
        raise ValueError(f"Cannot find a param with the given name: {name}")


def _processClass(classtype):
    allParameters = {}
    for name, nametype in typing.get_type_hints(classtype, include_extras=True).items():
        membertype, annotations = nametype, []
        if typing.get_origin(nametype) is typing.Annotated:
            membertype, *annotations = typing.get_args(nametype)
        try:
            serializer, annotations = createSerializer(membertype, annotations)
        except Exception as e:
            raise Exception(f"Unable to create serializer for {classtype} member {name}") from e
        if hasattr(classtype, name):
            default = Default(getattr(classtype, name))
        else:
            defaults = [a for a in annotations if isinstance(a, Default)]
            default = defaults[0] if defaults else Default(serializer.default())
        allParameters[name] = (serializer, default, nametype)
        setattr(classtype, name, _makeProperty(name))

    def checkedSetAttr(attr, value) -> None:
        if hasattr(classtype, attr):
            raise ValueError(f"Cannot use reserved name '{attr}' in a parameterNodeWrapper")
        setattr(classtype, attr, value)

    def getValue(self, name):
        _checkParamName(self, name)
        return getattr(self, f"_{name}_impl").read()

    def setValue(self, name, value):
        _checkParamName(self, name)
        return getattr(self, f"_{name}_impl").write(value)

    checkedSetAttr("allParameters", allParameters)
    checkedSetAttr("_is_parameter_node_wrapper", True)
    classtype.__init__ = _initMethod
    checkedSetAttr("default", lambda self, name: (_checkParamName(self, name), allParameters[name][1])[1])
    checkedSetAttr("isCached", lambda self, name: (_checkParamName(self, name), True)[1])
    checkedSetAttr("dataType", staticmethod(lambda name: allParameters[name][2]))
    checkedSetAttr("getValue", getValue)
    checkedSetAttr("setValue", setValue)
    checkedSetAttr("StartModify", lambda self: self.parameterNode.StartModify())
    checkedSetAttr("EndModify", lambda self, wasModified: self.parameterNode.EndModify(wasModified))
    checkedSetAttr("AddObserver", lambda self, event, callback, priority=0.0:
                   self.parameterNode.AddObserver(event, callback, priority))
    checkedSetAttr("RemoveObserver", lambda self, tag: self.parameterNode.RemoveObserver(tag))
    checkedSetAttr("Modified", lambda self: self.parameterNode.Modified())
    return classtype


def parameterNodeWrapper(classtype=None):
    """Class decorator to make a parameter node wrapper that supports typed property access."""

    def wrap(cls):
        return _processClass(cls)

    if classtype is None:
        return wrap
    return wrap(classtype)


def isParameterNodeWrapper(classOrObj) -> bool:
    return getattr(classOrObj, "_is_parameter_node_wrapper", False)


def make_parameter_node_wrapper_module():
    import types

    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.__doc__ = __doc__
    for name in ("parameterNodeWrapper", "isParameterNodeWrapper", "Default", "NotNone", "IsInstance", "Validator"):
        setattr(module, name, globals()[name])
    return module
