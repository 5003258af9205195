package propensity.sql;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.execution.command.SetCommand;
import scala.Function1;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.BoxedUnit;

/**
 * spark.sql.extensions class of `propensity sql-server`: a check rule that refuses every statement
 * that would change data or state, on the analyzed plan, before anything runs.
 *
 * <p>The same policy as propensity.stages.analyst.statements (the `propensity sql` CLI), on the
 * analyzed plan: a statement may hold query operators of Spark's catalyst and execution packages
 * and a few read-only commands (SHOW, DESCRIBE, USE, SET without a value, EXPLAIN); no other
 * command, no shell command (TRANSFORM ... USING), no procedure call, no directory write, no
 * reflect()/java_method(), and nothing at all while SQL on file paths is on.
 *
 * <p>Deny by default: once {@link #arm()} is called (after the server's own start-up), the rule
 * applies on every thread except those that called {@link #trustThisThread()} (the server's own
 * table registration). Nobody writes through the endpoint: an operator changes data with
 * `propensity sql --allow-writes`, which takes the tables' write locks.
 */
public final class ReadOnlyGuard implements Function1<SparkSessionExtensions, BoxedUnit> {
  static final Set<String> READ_ONLY_COMMANDS = new HashSet<>(Arrays.asList(
      "ExplainCommand", "ShowTables", "ShowTablesCommand", "ShowTableExtended", "ShowNamespaces",
      "ShowNamespacesCommand", "ShowViews", "ShowViewsCommand", "ShowColumns", "ShowColumnsCommand",
      "ShowDeltaTableColumnsCommand", "ShowCreateTable", "ShowCreateTableCommand", "ShowTableProperties",
      "ShowTablePropertiesCommand", "ShowPartitions", "ShowPartitionsCommand", "ShowFunctions",
      "ShowFunctionsCommand", "ShowCatalogsCommand", "ShowCurrentNamespaceCommand", "DescribeRelation",
      "DescribeTableCommand", "DescribeColumn", "DescribeColumnCommand", "DescribeNamespace",
      "DescribeDatabaseCommand", "DescribeFunction", "DescribeFunctionCommand", "DescribeQueryCommand",
      "DescribeDeltaHistory", "DescribeDeltaHistoryCommand", "DescribeDeltaDetailCommand",
      "SetCatalogAndNamespace", "SetNamespaceCommand", "SetCatalogCommand", "SetCommand"));

  static final Set<String> NOT_QUERIES = new HashSet<>(Arrays.asList(
      "ScriptTransformation", "HiveScriptTransformation", "Call", "InsertIntoDir", "InsertIntoDataSourceDir",
      "InsertIntoHiveDirCommand"));

  private static final ThreadLocal<Boolean> TRUSTED = ThreadLocal.withInitial(() -> Boolean.FALSE);
  private static volatile boolean armed = false;

  /** Enforce the rule on every thread that is not trusted, from now on. */
  public static void arm() {
    armed = true;
  }

  /** Let the calling thread (the server's own work, never a client's) run anything. */
  public static void trustThisThread() {
    TRUSTED.set(Boolean.TRUE);
  }

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    extensions.injectCheckRule(session -> plan -> {
      check(session, plan);
      return BoxedUnit.UNIT;
    });
    return BoxedUnit.UNIT;
  }

  static void check(SparkSession session, LogicalPlan plan) {
    if (!armed || TRUSTED.get()) {
      return;
    }
    // A client can switch this on through its JDBC URL (;?spark.sql.runSQLOnFiles=true), so it is
    // checked on every statement: with it, SELECT * FROM text.`/any/file` reads the server's files.
    String refused = session.sessionState().conf().runSQLonFile()
        ? "spark.sql.runSQLOnFiles=true (SQL on file paths)" : firstWrite(plan);
    if (refused != null) {
      throw new SecurityException("read-only SQL endpoint: " + refused + " is not allowed (it only reads;"
          + " an operator changes data with `propensity sql --allow-writes`)");
    }
  }

  /** The first node or expression that would change data or state, or null when the plan only reads. */
  static String firstWrite(LogicalPlan plan) {
    String name = plan.getClass().getSimpleName();
    if (plan instanceof Command) {
      if (!READ_ONLY_COMMANDS.contains(name)) {
        return name;
      }
      if (plan instanceof SetCommand && ((SetCommand) plan).kv().isDefined()
          && ((SetCommand) plan).kv().get()._2().isDefined()) {
        return "SET key=value";
      }
    } else if (NOT_QUERIES.contains(name) || !isSparkOperator(plan)) {
      return name;
    }
    for (Expression e : CollectionConverters.asJava(plan.expressions())) {
      String bad = firstReflection(e);
      if (bad != null) {
        return bad;
      }
    }
    for (LogicalPlan child : CollectionConverters.asJava(plan.children())) {
      String bad = firstWrite(child);
      if (bad != null) {
        return bad;
      }
    }
    for (LogicalPlan subquery : CollectionConverters.asJava(plan.subqueries())) {
      String bad = firstWrite(subquery);
      if (bad != null) {
        return bad;
      }
    }
    return null;
  }

  /** Query operators and relations come from Spark's catalyst and execution packages; other nodes
   * (an extension's own, such as Delta's RESTORE) are not known to only read. */
  private static boolean isSparkOperator(LogicalPlan plan) {
    String cls = plan.getClass().getName();
    return cls.startsWith("org.apache.spark.sql.catalyst.") || cls.startsWith("org.apache.spark.sql.execution.");
  }

  private static String firstReflection(Expression e) {
    if (e.getClass().getSimpleName().equals("CallMethodViaReflection")) {
      return "reflect()/java_method()";
    }
    for (Expression child : CollectionConverters.asJava(e.children())) {
      String bad = firstReflection(child);
      if (bad != null) {
        return bad;
      }
    }
    return null;
  }
}
