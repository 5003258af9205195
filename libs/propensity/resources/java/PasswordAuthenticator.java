package propensity.sql;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * HiveServer2 CUSTOM authentication for `propensity sql-server`.
 *
 * <p>Accepted logins: the "user:password" lines of the file named by the system property
 * propensity.sql.credentials, else the PROPENSITY_SQL_USER / PROPENSITY_SQL_PASSWORD environment
 * variables. With neither, nobody logs in. Passwords are compared in constant time. HiveServer2
 * makes one instance per login, so a changed file counts from the next login on.
 */
public final class PasswordAuthenticator implements PasswdAuthenticationProvider {
  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    boolean ok = false;
    for (String[] login : logins()) {
      // No early exit: every configured login is compared, whatever matches.
      ok |= same(login[0], user) & same(login[1], password);
    }
    if (!ok) {
      throw new AuthenticationException("wrong user name or password");
    }
  }

  private static boolean same(String expected, String given) {
    return given != null
        && MessageDigest.isEqual(
            expected.getBytes(StandardCharsets.UTF_8), given.getBytes(StandardCharsets.UTF_8));
  }

  private static List<String[]> logins() throws AuthenticationException {
    List<String[]> logins = new ArrayList<>();
    String file = System.getProperty("propensity.sql.credentials");
    if (file != null && !file.isEmpty()) {
      try {
        for (String line : Files.readAllLines(Path.of(file), StandardCharsets.UTF_8)) {
          int colon = line.indexOf(':');
          if (colon > 0 && colon < line.length() - 1) {
            logins.add(new String[] {line.substring(0, colon).strip(), line.substring(colon + 1)});
          }
        }
      } catch (IOException e) {
        throw new AuthenticationException("the server cannot read its credentials file");
      }
      return logins;
    }
    String user = System.getenv("PROPENSITY_SQL_USER");
    String password = System.getenv("PROPENSITY_SQL_PASSWORD");
    if (password != null && !password.isEmpty()) {
      logins.add(new String[] {user == null || user.isEmpty() ? "analyst" : user, password});
    }
    return logins;
  }
}
