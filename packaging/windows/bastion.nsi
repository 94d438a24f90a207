; Bastion's per-user installer, for people without admin rights (NSIS 3.08, Modern UI 2).
; The per-machine MSI (bastion.wxs) is what administrators deploy; this one needs no UAC
; prompt and installs for the current user only.
;
; Built by packaging/windows/make_installers.py, or by hand:
;   makensis -DVERSION=X.Y.Z -DPAYLOAD_DIR=dist\Bastion [-DPOLICY_DIR=packaging\policy]
;            [-DICON=resources\icons\bastion.ico] [-DOUT_FILE=Bastion-X.Y.Z-setup.exe]
;            packaging\windows\bastion.nsi
; PAYLOAD_DIR is the PyInstaller onedir folder: Bastion.exe, bastion-cli.exe and _internal\.
; The uninstaller deletes exactly those by name, so make_installers.py refuses a payload
; with anything else at its top level (add it to both sections below first).

!ifndef VERSION
  !error "Give the version: makensis -DVERSION=X.Y.Z ..."
!endif
!ifndef PAYLOAD_DIR
  !error "Give the frozen app folder: makensis -DPAYLOAD_DIR=path\to\Bastion ..."
!endif
!ifndef POLICY_DIR
  !define POLICY_DIR "${__FILEDIR__}\..\policy"
!endif
!ifndef OUT_FILE
  !define OUT_FILE "Bastion-${VERSION}-setup.exe"
!endif

!define APP_NAME "Bastion"
!define PUBLISHER "Bastion"
!define MAIN_EXE "Bastion.exe"
!define UNINSTALLER "Uninstall.exe"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Bastion"

Unicode true
ManifestDPIAware true
; Solid LZMA: the payload is hundreds of small files (Python modules, Qt plugins).
SetCompressor /SOLID lzma
RequestExecutionLevel user

Name "${APP_NAME}"
OutFile "${OUT_FILE}"
BrandingText "${APP_NAME} ${VERSION}"
; Per-user programs folder (what winget and Windows itself use for per-user apps). Never
; $LOCALAPPDATA\Bastion: that is where Bastion keeps the user's history and models.
InstallDir "$LOCALAPPDATA\Programs\${APP_NAME}"
; An upgrade goes where the previous version went.
InstallDirRegKey HKCU "${UNINSTALL_KEY}" "InstallLocation"

!include "MUI2.nsh"
!include "FileFunc.nsh"
!include "LogicLib.nsh"
!include "x64.nsh"

!ifdef ICON
  !define MUI_ICON "${ICON}"
  !define MUI_UNICON "${ICON}"
!endif
!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN "$INSTDIR\${MAIN_EXE}"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP_NAME}"

!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

; The version resource of setup.exe itself (Explorer's Details tab, and what tests read).
VIProductVersion "${VERSION}.0"
VIAddVersionKey /LANG=${LANG_ENGLISH} "ProductName" "${APP_NAME}"
VIAddVersionKey /LANG=${LANG_ENGLISH} "CompanyName" "${PUBLISHER}"
VIAddVersionKey /LANG=${LANG_ENGLISH} "LegalCopyright" "Apache-2.0"
VIAddVersionKey /LANG=${LANG_ENGLISH} "FileDescription" "${APP_NAME} installer"
VIAddVersionKey /LANG=${LANG_ENGLISH} "FileVersion" "${VERSION}"
VIAddVersionKey /LANG=${LANG_ENGLISH} "ProductVersion" "${VERSION}"


; In: a folder on the stack. Out: "1" on the stack if $INSTDIR is that folder, lies inside
; it, or contains it (say $INSTDIR is $LOCALAPPDATA itself), else "0". Case-insensitive, as
; Windows paths are.
Function InstDirOverlaps
  Exch $R1
  Push $R0
  Push $R2
  Push $R3
  StrCpy $R3 0
  StrCpy $R0 "$INSTDIR"
  ; "C:\Apps\" and "C:\Apps" are the same folder: compare both as "C:\Apps\".
  ${Do}
    StrCpy $R2 $R0 1 -1
    ${IfThen} $R2 != "\" ${|} ${Break} ${|}
    StrCpy $R0 $R0 -1
  ${Loop}
  StrCpy $R0 "$R0\"
  StrCpy $R1 "$R1\"
  StrLen $R2 $R1
  StrCpy $R2 $R0 $R2
  ${IfThen} $R2 == $R1 ${|} StrCpy $R3 1 ${|}
  StrLen $R2 $R0
  StrCpy $R2 $R1 $R2
  ${IfThen} $R2 == $R0 ${|} StrCpy $R3 1 ${|}
  StrCpy $R1 $R3
  Pop $R3
  Pop $R2
  Pop $R0
  Exch $R1
FunctionEnd

; Out: "1" on the stack if $INSTDIR overlaps a folder where Bastion keeps the user's files.
; platformdirs puts data, settings, models, logs and cache all under $LOCALAPPDATA\Bastion
; (roaming is off: desktop/bastion_desktop/core/paths.py); the roaming $APPDATA\Bastion is
; refused too, should that ever change.
Function InstDirOverlapsUserData
  Push "$LOCALAPPDATA\${APP_NAME}"
  Call InstDirOverlaps
  Exch $0
  ${If} $0 == 0
    Push "$APPDATA\${APP_NAME}"
    Call InstDirOverlaps
    Pop $0
  ${EndIf}
  Exch $0
FunctionEnd

Function .onInit
  ; The frozen app is 64-bit; this installer stub is 32-bit so that every NSIS build of it
  ; (Debian's makensis, Chocolatey's) produces the same kind of file.
  ${IfNot} ${RunningX64}
    MessageBox MB_ICONSTOP|MB_OK "${APP_NAME} needs 64-bit Windows." /SD IDOK
    Abort
  ${EndIf}
FunctionEnd

Function .onVerifyInstDir
  Call InstDirOverlapsUserData
  Pop $0
  ${If} $0 == 1
    ; Greys out "Install": uninstalling from there would sit next to the user's history.
    Abort
  ${EndIf}
FunctionEnd

Section "${APP_NAME}" SecMain
  SectionIn RO
  ; .onVerifyInstDir only runs for the directory page; a silent install with /D= gets here
  ; without it.
  Call InstDirOverlapsUserData
  Pop $0
  ${If} $0 == 1
    MessageBox MB_ICONSTOP|MB_OK "$INSTDIR holds (or is inside) the folder where ${APP_NAME} keeps your conversations and models. Choose another folder." /SD IDOK
    Abort
  ${EndIf}

  SetShellVarContext current
  SetOutPath "$INSTDIR"
  ; A previous version's _internal would keep modules and Qt plugins that the new build
  ; does not ship, and Qt loads every plugin it finds there.
  RMDir /r "$INSTDIR\_internal"
  File /r "${PAYLOAD_DIR}\*"

  SetOutPath "$INSTDIR\policies"
  File "${POLICY_DIR}\bastion.admx"
  SetOutPath "$INSTDIR\policies\en-US"
  File "${POLICY_DIR}\en-US\bastion.adml"

  ; The shortcut's working folder is the current output path.
  SetOutPath "$INSTDIR"
  WriteUninstaller "$INSTDIR\${UNINSTALLER}"
  CreateShortcut "$SMPROGRAMS\${APP_NAME}.lnk" "$INSTDIR\${MAIN_EXE}"

  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "${APP_NAME}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\${UNINSTALLER}"'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\${UNINSTALLER}" /S'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\${MAIN_EXE},0"
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1
  ; Measured after copying, so Add/Remove Programs shows what is really on disk (in KiB).
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "EstimatedSize" "$0"
SectionEnd

Section "Uninstall"
  SetShellVarContext current
  Delete "$SMPROGRAMS\${APP_NAME}.lnk"

  ; Only what the installer put here, by name, never `RMDir /r "$INSTDIR"`: whatever else is
  ; in this folder is not ours to delete. The user's conversations, models and settings live
  ; in $LOCALAPPDATA\Bastion and are left alone (the installer refuses any folder that
  ; overlaps it).
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\${MAIN_EXE}"
  Delete "$INSTDIR\bastion-cli.exe"
  Delete "$INSTDIR\policies\en-US\bastion.adml"
  RMDir "$INSTDIR\policies\en-US"
  Delete "$INSTDIR\policies\bastion.admx"
  RMDir "$INSTDIR\policies"
  Delete "$INSTDIR\${UNINSTALLER}"
  ; Removed only if now empty.
  RMDir "$INSTDIR"

  DeleteRegKey HKCU "${UNINSTALL_KEY}"
SectionEnd
