"""What one SQL statement would do, decided on Spark's own parsed plan before anything runs.

``propensity sql`` runs a statement only if it reads, unless the operator passes
``--allow-writes``. The statement is parsed with the session's parser
(``sessionState.sqlParser.parsePlan``: Delta's commands included), never analyzed or
executed, so the decision works for any statement and touches nothing. It reads when

* its root is one of :data:`READ_ONLY_ROOTS` (``SHOW ...``, ``DESCRIBE ...``, ``USE``, ``SET`` to
  look at a setting, ``EXPLAIN`` of a statement that reads), or
* every node of the plan, subqueries and CTEs included, is a query operator of Spark's catalyst
  package and jar (a ``Command`` or parsed statement is not; nor is a node from elsewhere, such as
  Delta's ``RESTORE``), the plan runs no shell command (``SELECT TRANSFORM ... USING``), calls no
  procedure and writes no directory (:data:`NOT_QUERIES`), and calls no Java method
  (:data:`FORBIDDEN_FUNCTIONS`).

Anything else (``INSERT``, ``DELETE``, ``MERGE``, ``DROP``, ``ALTER``, ``CREATE``, ``CACHE``,
``VACUUM``, unknown node types) changes data or state and is refused. Several statements in one
string do not parse. The JDBC endpoint enforces the same policy inside the JVM
(``resources/java/ReadOnlyGuard.java``); ``tests/test_readonly.py`` runs one list of statements
through both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import SparkSession

from propensity.core.errors import SqlError

#: Root nodes that only read (parsed-plan class names of Spark 4.0 and Delta 4.0).
READ_ONLY_ROOTS = frozenset({
    "ShowTables", "ShowTableExtended", "ShowNamespaces", "ShowViews", "ShowColumns", "ShowCreateTable",
    "ShowTableProperties", "ShowPartitions", "ShowFunctions", "ShowCatalogsCommand", "ShowCurrentNamespaceCommand",
    "DescribeRelation", "DescribeColumn", "DescribeNamespace", "DescribeFunction", "DescribeQueryCommand",
    "DescribeDeltaHistory", "DescribeDeltaDetailCommand", "SetCatalogAndNamespace", "SetCommand", "ExplainCommand",
})

#: Catalyst nodes that are neither commands nor parsed statements, yet do more than query.
NOT_QUERIES = frozenset({
    "ScriptTransformation", "Call", "UnresolvedProcedure", "InsertIntoDir", "ExecuteImmediateQuery",
    "CompoundBody", "SingleStatement", "RestoreTableStatement", "ForStatement", "IfElseStatement",
    "IterateStatement", "LeaveStatement", "LoopStatement", "RepeatStatement", "WhileStatement",
    "SearchedCaseStatement", "SimpleCaseStatement", "ExceptionHandler",
})

#: Functions that call arbitrary Java methods.
FORBIDDEN_FUNCTIONS = frozenset({"reflect", "java_method", "try_reflect"})

#: Nodes that name a table, and the method that returns the name's parts.
_NAMING_NODES = {"UnresolvedRelation": "multipartIdentifier", "UnresolvedTable": "multipartIdentifier",
                 "UnresolvedTableOrView": "multipartIdentifier", "UnresolvedView": "multipartIdentifier",
                 "UnresolvedIdentifier": "nameParts"}


@dataclass(frozen=True)
class Statement:
    """One parsed statement: its kind, what in it writes (None: it only reads) and the tables it names."""

    kind: str
    writes: str | None
    tables: tuple[tuple[str, ...], ...]


def inspect_statement(spark: SparkSession, query: str) -> Statement:
    """Parse ``query`` (without running it) and say what it would do.

    :raises SqlError: the text is not one statement Spark can parse (Spark's first message line).
    """
    try:
        plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    except (CapturedException, Py4JJavaError) as e:
        raise SqlError(f"query failed: {first_line(e)}") from e
    walk = _Walk(spark)
    walk.visit(plan)
    return Statement(plan.getClass().getSimpleName(), _writes(plan, walk), tuple(walk.tables))


def first_line(error: Exception) -> str:
    """The first non-empty line of an error's message."""
    text = str(error.java_exception.getMessage()) if isinstance(error, Py4JJavaError) else str(error)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


def _writes(plan: Any, walk: _Walk) -> str | None:
    root = plan.getClass().getSimpleName()
    if root not in READ_ONLY_ROOTS:
        return walk.offender
    if root == "SetCommand":
        pair = plan.kv()
        return "SetCommand (SET key=value)" if pair.isDefined() and pair.get()._2().isDefined() else None
    if root == "ExplainCommand":
        inner = _Walk(walk.spark)
        inner.visit(plan.logicalPlan())
        return f"ExplainCommand ({inner.offender})" if inner.offender else None
    return None


class _Walk:
    """One pass over a parsed plan: the first node that is not a plain query, and every table named."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        jvm = spark.sparkContext._jvm
        logical = "org.apache.spark.sql.catalyst.plans.logical."
        self._command = jvm.java.lang.Class.forName(logical + "Command")  # type: ignore[union-attr]
        self._statement = jvm.java.lang.Class.forName(logical + "ParsedStatement")  # type: ignore[union-attr]
        self._plan = jvm.java.lang.Class.forName(logical + "LogicalPlan")  # type: ignore[union-attr]
        self.offender: str | None = None
        self.tables: list[tuple[str, ...]] = []

    def visit(self, node: Any) -> None:
        name = node.getClass().getSimpleName()
        if self.offender is None and not self._is_query(node, name):
            self.offender = name
        if name in _NAMING_NODES:
            self.tables.append(tuple(str(p) for p in _items(getattr(node, _NAMING_NODES[name])())))
        for expression in _items(node.expressions()):
            self._visit_expression(expression)
        for child in self._plans_in(node, name):
            self.visit(child)

    def _is_query(self, node: Any, name: str) -> bool:
        cls = node.getClass()
        if self._command.isInstance(node) or self._statement.isInstance(node) or name in NOT_QUERIES:
            return False
        # Delta and other extensions define nodes in Spark's package too: the jar tells them apart.
        source = cls.getProtectionDomain().getCodeSource()
        return (str(cls.getName()).startswith("org.apache.spark.sql.catalyst.")
                and source is not None and "spark-catalyst" in str(source.getLocation()))

    def _plans_in(self, node: Any, name: str) -> list[Any]:
        """Children, plans held in other fields (an INSERT's target table) and CTE definitions."""
        plans = list(_items(node.children()))
        for i in range(node.productArity()):
            element = node.productElement(i)
            if self._plan.isInstance(element) and not any(element.equals(p) for p in plans):
                plans.append(element)
        if name == "UnresolvedWith":
            plans += [pair._2() for pair in _items(node.cteRelations())]
        return plans

    def _visit_expression(self, expression: Any) -> None:
        name = expression.getClass().getSimpleName()
        if name == "UnresolvedFunction":
            function = str(_items(expression.nameParts())[-1]).lower()
            if function in FORBIDDEN_FUNCTIONS and self.offender is None:
                self.offender = f"function {function}()"
        try:
            subquery = expression.plan()  # scalar, IN and EXISTS subqueries carry a plan
        except Py4JError:
            subquery = None
        if subquery is not None:
            self.visit(subquery)
        for child in _items(expression.children()):
            self._visit_expression(child)


def _items(seq: Any) -> list[Any]:
    """A Scala collection as a Python list."""
    iterator = seq.iterator()
    out = []
    while iterator.hasNext():
        out.append(iterator.next())
    return out
