"""``qt.QUiLoader``: builds stand-in widgets from a Qt Designer ``.ui`` file, for Slicer's real
``slicer.util.loadUI``."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from typing import Dict, Optional

from .event_loop import APP
from .qt_core import QObject


def _widget_classes() -> Dict[str, type]:
    """Every widget and layout class the stand-in offers, by Qt class name (the ``qt``, ``ctk`` and MRML widget
    stand-ins)."""
    from . import ctk_widgets, mrml_widgets, qt_item_views, qt_widgets

    return {name: getattr(source, name) for source in (qt_widgets, qt_item_views, ctk_widgets, mrml_widgets)
            for name in source.__all__}


def _property_value(element: ElementTree.Element):
    """The value of a ``<property>`` child (qtbase src/tools/uic/ui4.cpp ``DomProperty`` kinds)."""
    kind, text = element.tag, element.text or ""
    if kind == "bool":
        return text.strip() == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "stringlist":
        return [item.text or "" for item in element.findall("string")]
    if kind in ("rect", "size", "point"):
        return tuple(int(child.text or 0) for child in element)
    return text  # string, cstring, enum, set


class QUiLoader(QObject):
    """``QUiLoader::load`` on ``QFormBuilder`` (qttools src/designer/src/uitools/quiloader.cpp, src/designer/src/lib/
    uilib/abstractformbuilder.cpp): each ``<widget>`` is made by class name with its parent and ``objectName``,
    its ``<property>`` values set in file order (a name the class has no property for becomes a dynamic property,
    as QObject::setProperty does), each ``<layout>`` put on its widget with its items (a spacer is an item that is
    no widget), then the ``<connections>`` are made by object name. A custom widget class the loader cannot make
    falls back to the class it ``<extends>``, with Qt's warning; a class it cannot make at all is left out, also
    with a warning. Warnings go to ``slicer.app.warning``. ``load`` returns None for a file that is no .ui XML."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._classes = _widget_classes()
        self._extends: Dict[str, str] = {}
        self.errorString = ""

    def load(self, device, parentWidget=None):
        try:
            root = ElementTree.parse(device.fileName()).getroot()
        except (OSError, ElementTree.ParseError) as exc:
            self.errorString = str(exc)
            return None
        top = root.find("widget")
        if root.tag != "ui" or top is None:
            self.errorString = "not a Qt Designer .ui file"
            return None
        self._extends = {custom.findtext("class"): custom.findtext("extends")
                         for custom in root.iter("customwidget")}
        widget = self._create_widget(top, parentWidget)
        if widget is not None:
            self._create_connections(root.find("connections"), widget)
        return widget

    def _warn(self, message: str) -> None:
        if APP.app is not None:
            APP.app.warning(message)

    def _widget_class(self, name: str) -> Optional[type]:
        cls = self._classes.get(name)
        base = name
        while cls is None and self._extends.get(base):
            base = self._extends[base]
            cls = self._classes.get(base)
            if cls is not None:
                self._warn(f"QFormBuilder was unable to create a custom widget of the class '{name}'; defaulting "
                           f"to base class '{base}'.")
        if cls is None:
            self._warn(f"The creation of a widget of the class '{name}' failed.")
        return cls

    def _create_widget(self, element: ElementTree.Element, parent):
        cls = self._widget_class(element.get("class", ""))
        if cls is None:
            return None
        widget = cls()
        widget.setParent(parent)
        widget.objectName = element.get("name", "")
        for child in element:
            if child.tag == "property" and len(child):
                widget.setProperty(child.get("name"), _property_value(child[0]))
            elif child.tag == "layout":
                widget.setLayout(self._create_layout(child))
            elif child.tag == "widget":
                self._create_widget(child, widget)
        return widget

    def _create_layout(self, element: ElementTree.Element):
        layout = self._classes[element.get("class", "QVBoxLayout")]()
        layout.objectName = element.get("name", "")
        for item in element.findall("item"):
            for child in item:
                if child.tag == "widget":
                    widget = self._create_widget(child, None)
                    if widget is not None:
                        layout.addWidget(widget)
                elif child.tag == "layout":
                    layout.addLayout(self._create_layout(child))
                elif child.tag == "spacer":
                    layout.addItem(("spacer", child.get("name", "")))
        return layout

    def _create_connections(self, element: Optional[ElementTree.Element], top) -> None:
        if element is None:
            return
        named = {obj.objectName: obj for obj in descendants(top)}
        for connection in element.findall("connection"):
            sender = named.get(connection.findtext("sender"))
            receiver = named.get(connection.findtext("receiver"))
            slot = (connection.findtext("slot") or "").split("(")[0]
            if sender is None or receiver is None or not hasattr(receiver, slot):
                self._warn(f"QAbstractFormBuilder: cannot connect {connection.findtext('sender')} to "
                           f"{connection.findtext('receiver')}.{slot}")
                continue
            sender.connect(connection.findtext("signal"), getattr(receiver, slot))


def descendants(obj):
    """``obj`` and every object under it (its children, theirs, ...)."""
    yield obj
    for child in obj.children():
        yield from descendants(child)
